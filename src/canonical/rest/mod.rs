//! Magento standard REST responses → canonical entities (placeholder module filled by the REST
//! adapter work).
