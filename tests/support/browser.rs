//! A test playing the person's browser in the OAuth authorisation-code flow: it opens the
//! simulator's authorize URL, follows the approval page's link, and returns (or follows) the
//! redirect back to the app's `redirect_uri`.

/// A client that does not follow redirects (each hop is checked by the test).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("a client")
}

/// The `href` of the element with `id` in `page`, entities decoded.
pub fn link(page: &str, id: &str) -> String {
    let marker = format!("id=\"{id}\" href=\"");
    let start = page.find(&marker).unwrap_or_else(|| panic!("no #{id} link in the page:\n{page}")) + marker.len();
    let end = page[start..].find('"').expect("a closed attribute") + start;
    html_escape::decode_html_entities(&page[start..end]).into_owned()
}

/// Opens `authorize`, clicks `button` (`approve` or `deny`) and returns where the provider
/// redirects the browser (the `Location` of its 302).
pub async fn consent(authorize: &str, button: &str) -> url::Url {
    let http = client();
    let page = http.get(authorize).send().await.expect("the authorize page");
    assert_eq!(page.status().as_u16(), 200, "the authorize page answers 200");
    let base = url::Url::parse(authorize).expect("a URL");
    let page = page.text().await.expect("a page");
    let href = base.join(&link(&page, button)).expect("a link");
    let answer = http.get(href).send().await.expect("the approval");
    assert_eq!(answer.status().as_u16(), 302, "the approval redirects back");
    let location = answer.headers().get("location").expect("a Location").to_str().expect("text").to_owned();
    url::Url::parse(&location).expect("a redirect URL")
}
