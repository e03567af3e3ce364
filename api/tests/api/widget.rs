//! The carousel widget (`api/widget/related-items.js`) in a real browser: Debian's chromium,
//! driven over WebDriver (chromedriver, the `fantoccini` crate), against real API instances on
//! the shared cluster. The demo page served by the API shows 4 cards and pages with the arrows
//! and the keyboard; a page on another origin (a tiny static server here) uses the widget
//! through CORS and shows the empty and error states; a reload revalidates with the ETag.
//!
//! The browser tests skip, saying so, only when chromedriver is not installed
//! (`scripts/bootstrap` installs `chromium` and `chromium-driver`). With
//! `WIDGET_SCREENSHOTS=results` they write the screenshots committed in `results/`.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

/// The product the demo page shows: one of the fixture's products with 16 related items.
const DEMO_PRODUCT: i32 = 42;

/// chromedriver from `CHROMEDRIVER` (alone, when set), the `PATH` or Debian's place; `None`
/// means not installed.
fn chromedriver() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CHROMEDRIVER") {
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("chromedriver"))
            .find(|p| p.is_file())
    });
    on_path.or_else(|| {
        let debian = PathBuf::from("/usr/bin/chromedriver");
        debian.is_file().then_some(debian)
    })
}

/// The browser binary: `CHROME`, else Debian's chromium.
fn chromium() -> PathBuf {
    std::env::var_os("CHROME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"))
}

fn free_port() -> u16 {
    stack::process::free_port().expect("a free port")
}

/// A chromedriver process and one headless chromium session on a fresh profile.
struct Browser {
    client: Client,
    _driver: Driver,
    _profile: tempfile::TempDir,
}

/// The chromedriver process, ended with its process group (the browser it started) on drop,
/// whatever happened to the test.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        use nix::sys::signal::{killpg, Signal};
        use nix::unistd::Pid;
        let _ = killpg(Pid::from_raw(self.0.id() as i32), Signal::SIGKILL);
        let _ = self.0.wait();
    }
}

impl Browser {
    /// `None` (after printing why) when chromedriver is not installed: the only reason to
    /// skip. Anything else that fails is a test failure.
    async fn start(test: &str) -> Option<Browser> {
        let Some(driver_path) = chromedriver() else {
            // Straight to stderr: the test harness captures eprintln! of a passing test, and
            // a skip must be seen.
            use std::io::Write;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {test}: chromedriver is not installed (Debian: apt-get install chromium \
                 chromium-driver; scripts/bootstrap does it as root)"
            );
            return None;
        };
        let port = free_port();
        let driver = Driver({
            use std::os::unix::process::CommandExt;
            Command::new(&driver_path)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                // Its own process group, so that the browser it starts is ended with it even if
                // the test fails before closing the session.
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("start {}: {e}", driver_path.display()))
        });
        let profile = tempfile::Builder::new()
            .prefix("widget-chromium-")
            .tempdir()
            .expect("profile dir");
        let browser = Browser {
            client: connect_with_retries(port, &profile).await,
            _driver: driver,
            _profile: profile,
        };
        browser
            .client
            .set_window_size(1280, 1000)
            .await
            .expect("window size");
        Some(browser)
    }

    async fn close(self) {
        let _ = self.client.clone().close().await;
    }
}

/// Connects to chromedriver on `port` (it takes a moment to listen) with the flags that work
/// here as root, headless.
async fn connect_with_retries(port: u16, profile: &tempfile::TempDir) -> Client {
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        "--force-device-scale-factor=1",
        // Prices are formatted in the browser's locale: pin it, so the checks hold anywhere.
        "--lang=en-US",
        &format!("--user-data-dir={}", profile.path().display()),
    ];
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({ "binary": chromium(), "args": args }),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut builder =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(caps.clone());
        match builder.connect(&format!("http://127.0.0.1:{port}")).await {
            Ok(client) => return client,
            // chromedriver refuses connections until it listens.
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("no WebDriver session with {}: {e}", chromium().display()),
        }
    }
}

/// Serves `page` at every path but `/favicon.ico` (404), from another origin than the API's.
async fn static_page(page: String) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let page = page.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let response = if head.starts_with(b"GET /favicon.ico ") {
                    "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_string()
                } else {
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{page}",
                        page.len()
                    )
                };
                let _ = stream.write_all(response.as_bytes()).await;
            });
        }
    });
    addr
}

/// The `<related-items>` element matching `css`, once its `data-state` is `state`.
async fn widget_in_state(client: &Client, css: &str, state: &str) -> Result<Element> {
    let host = client
        .wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css(css))
        .await
        .with_context(|| format!("{css} on the page"))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = host.attr("data-state").await?;
        if now.as_deref() == Some(state) {
            return Ok(host);
        }
        if Instant::now() > deadline {
            bail!("{css} stayed in state {now:?}, not {state}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One card as the user sees it.
#[derive(Debug)]
struct Card {
    name: String,
    category: String,
    price: String,
    rating: String,
    href: String,
    img_loading: Option<String>,
}

/// The cards the carousel shows now (displayed, not merely in the DOM).
async fn visible_cards(host: &Element) -> Result<Vec<Card>> {
    let root = host.shadow_root().await?;
    let mut cards = Vec::new();
    for li in root.find_all(Locator::Css("li")).await? {
        if !li.is_displayed().await? {
            continue;
        }
        let link = li.find(Locator::Css("a")).await?;
        let text = |css: &'static str| {
            let link = link.clone();
            async move { link.find(Locator::Css(css)).await?.text().await }
        };
        let img = li.find_all(Locator::Css("img")).await?;
        cards.push(Card {
            name: text(".name").await?,
            category: text(".category").await?,
            price: text(".price").await?,
            rating: text(".rating").await?,
            href: link.prop("href").await?.unwrap_or_default(),
            img_loading: match img.first() {
                Some(img) => img.attr("loading").await?,
                None => None,
            },
        });
    }
    Ok(cards)
}

fn names(ids: &[i32]) -> Vec<String> {
    ids.iter().map(|id| format!("Product {id}")).collect()
}

/// Text of the element matching `css` in the widget's shadow root.
async fn shadow_text(host: &Element, css: &str) -> Result<String> {
    let root = host.shadow_root().await?;
    Ok(root.find(Locator::Css(css)).await?.text().await?)
}

/// Writes a screenshot into `$WIDGET_SCREENSHOTS` (relative to the workspace root), if set.
fn save_screenshot(name: &str, png: &[u8]) {
    let Some(dir) = std::env::var_os("WIDGET_SCREENSHOTS") else {
        return;
    };
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(dir);
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    std::fs::write(dir.join(name), png).expect("write screenshot");
}

/// The count of one route's responses with one status, from the operator listener.
async fn requests_with_status(app: &TestApp, route: &str, status: u16) -> f64 {
    let series = format!("api_requests_total{{route=\"{route}\",status=\"{status}\"}} ");
    app.metrics()
        .await
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A screenshot of the element matching `css` alone, scrolled into view first (Chrome's element
/// screenshots are cut at the viewport).
async fn element_screenshot(client: &Client, css: &str) -> Result<Vec<u8>> {
    client
        .execute(
            "document.querySelector(arguments[0]).scrollIntoView({block: 'center'});",
            vec![json!(css)],
        )
        .await?;
    Ok(client.find(Locator::Css(css)).await?.screenshot().await?)
}

/// Reloads the widget (its `refresh()`) and returns its `data-last-status` afterwards.
async fn refresh(client: &Client, css: &str) -> Result<String> {
    let status = client
        .execute_async(
            "const [css, done] = arguments; const w = document.querySelector(css);
             w.refresh().then(() => done(w.dataset.lastStatus), e => done('threw ' + e));",
            vec![json!(css)],
        )
        .await?;
    Ok(status.as_str().unwrap_or_default().to_string())
}

async fn demo_page(client: &Client, app: &TestApp) -> Result<()> {
    client.goto(&app.url("/widget/demo.html")).await?;
    let host = widget_in_state(client, "related-items", "ready").await?;
    let expected = related_ids(DEMO_PRODUCT);
    ensure!(
        expected.len() == 16,
        "fixture: product 42 has 16 related items"
    );

    // Four cards, the first four in position order, each with what a card shows.
    let cards = visible_cards(&host).await?;
    let shown: Vec<String> = cards.iter().map(|c| c.name.clone()).collect();
    ensure!(shown == names(&expected[..4]), "first page: {cards:#?}");
    for (card, id) in cards.iter().zip(&expected) {
        ensure!(
            card.href.ends_with(&format!("#product-{id}")),
            "the demo's href-template: {card:?}"
        );
        ensure!(
            // The rendered text: the style capitalises it.
            ["RUNNING", "TENNIS", "HIKING", "CYCLING"].contains(&card.category.as_str()),
            "category: {card:?}"
        );
        ensure!(
            card.price == format!("${}.99", id),
            "price from price_cents: {card:?}"
        );
        ensure!(
            card.rating.contains(&format!("({})", id * 3)) || card.rating == "No reviews yet",
            "rating with its review count: {card:?}"
        );
        ensure!(
            card.img_loading.as_deref() == Some("lazy"),
            "lazy image: {card:?}"
        );
    }
    let root = host.shadow_root().await?;
    ensure!(
        root.find_all(Locator::Css("ul[role=list] > li"))
            .await?
            .len()
            == 16
    );
    let live = root.find(Locator::Css("[role=status]")).await?;
    ensure!(live.attr("aria-live").await?.as_deref() == Some("polite"));
    ensure!(live.prop("textContent").await?.as_deref() == Some("Items 1 to 4 of 16."));
    let prev = root.find(Locator::Css("button.prev")).await?;
    let next = root.find(Locator::Css("button.next")).await?;
    ensure!(prev.attr("aria-label").await?.as_deref() == Some("Previous items"));
    ensure!(next.attr("aria-label").await?.as_deref() == Some("Next items"));
    ensure!(!prev.is_enabled().await?, "no previous page at the start");
    save_screenshot("widget-demo.png", &client.screenshot().await?);

    // Next shows the following four; the live region says so.
    next.click().await?;
    let shown: Vec<String> = visible_cards(&host)
        .await?
        .into_iter()
        .map(|c| c.name)
        .collect();
    ensure!(shown == names(&expected[4..8]), "second page: {shown:?}");
    ensure!(live.prop("textContent").await?.as_deref() == Some("Items 5 to 8 of 16."));
    ensure!(prev.is_enabled().await?);
    save_screenshot("widget-next.png", &client.screenshot().await?);

    // The keyboard: arrow keys on the focused button page, the last page disables next.
    next.send_keys(&Key::Right.to_string()).await?;
    next.send_keys(&Key::Right.to_string()).await?;
    let shown: Vec<String> = visible_cards(&host)
        .await?
        .into_iter()
        .map(|c| c.name)
        .collect();
    ensure!(shown == names(&expected[12..16]), "last page: {shown:?}");
    ensure!(!next.is_enabled().await?, "no next page at the end");
    prev.send_keys(&Key::Left.to_string()).await?;
    let shown: Vec<String> = visible_cards(&host)
        .await?
        .into_iter()
        .map(|c| c.name)
        .collect();
    ensure!(shown == names(&expected[8..12]), "back one page: {shown:?}");

    // A reload revalidates: If-None-Match with the ETag, a 304, the same cards.
    let route = "/products/{id}/related";
    let before = requests_with_status(app, route, 304).await;
    ensure!(refresh(client, "related-items").await? == "304");
    ensure!(host.attr("data-state").await?.as_deref() == Some("ready"));
    ensure!(requests_with_status(app, route, 304).await == before + 1.0);
    let shown: Vec<String> = visible_cards(&host)
        .await?
        .into_iter()
        .map(|c| c.name)
        .collect();
    ensure!(
        shown == names(&expected[8..12]),
        "a 304 keeps the page: {shown:?}"
    );
    Ok(())
}

/// The demo page served by the API: 4 cards, next shows the following 4, arrow keys page,
/// links, lazy images, ARIA, and a reload that revalidates with the ETag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_shows_four_cards_and_pages_with_buttons_and_keys() {
    let Some(browser) = Browser::start("widget demo page").await else {
        return;
    };
    let cluster = shared_cluster().await;
    let app = spawn_app(test_config(&cluster)).await;
    let outcome = demo_page(&browser.client, &app).await;
    browser.close().await;
    app.stop().await;
    outcome.unwrap();
}

async fn cross_origin_page(client: &Client, page: &str, api: &TestApp) -> Result<()> {
    client.goto(page).await?;
    // Cross-origin fetches with CORS: the cards come.
    let found = widget_in_state(client, "#found", "ready").await?;
    let cards = visible_cards(&found).await?;
    let expected = related_ids(DEMO_PRODUCT);
    ensure!(
        cards.iter().map(|c| c.name.clone()).collect::<Vec<_>>() == names(&expected[..4]),
        "{cards:#?}"
    );
    let page_origin = page.trim_end_matches("/shop.html");
    ensure!(
        cards[0].href == format!("{page_origin}/products/{}", expected[0]),
        "links go to the shop's own product pages: {:?}",
        cards[0]
    );
    // An unknown product: the empty state.
    let unknown = widget_in_state(client, "#unknown", "empty").await?;
    ensure!(shadow_text(&unknown, ".message").await? == "No related items for this product.");
    save_screenshot(
        "widget-empty.png",
        &element_screenshot(client, "#unknown").await?,
    );
    // The API down (its port closed), a 503, and an origin CORS does not allow: the error
    // state, with a retry button.
    let down = widget_in_state(client, "#down", "error").await?;
    let message = shadow_text(&down, ".message").await?;
    ensure!(
        message.contains("Related items could not be loaded.") && message.contains("Try again"),
        "{message}"
    );
    save_screenshot(
        "widget-error.png",
        &element_screenshot(client, "#down").await?,
    );
    let unavailable = widget_in_state(client, "#unavailable", "error").await?;
    ensure!(shadow_text(&unavailable, ".message")
        .await?
        .contains("The server answered 503."));
    widget_in_state(client, "#forbidden", "error").await?;
    // Revalidation across origins: the If-None-Match needs a preflight, which the API answers.
    let route = "/products/{id}/related";
    let before = requests_with_status(api, route, 304).await;
    ensure!(refresh(client, "#found").await? == "304");
    ensure!(requests_with_status(api, route, 304).await == before + 1.0);
    ensure!(
        requests_with_status(api, route, 204).await >= 1.0,
        "a preflight"
    );
    client.execute("window.scrollTo(0, 0);", vec![]).await?;
    save_screenshot("widget-cross-origin.png", &client.screenshot().await?);
    Ok(())
}

/// A shop page on another origin loads the script from the API and reads it through CORS;
/// an unknown product shows the empty state, an API that is down, or answers 503, or does not
/// allow the page's origin, the error state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_another_origin_uses_the_widget_and_shows_empty_and_error_states() {
    let Some(browser) = Browser::start("widget cross-origin page").await else {
        return;
    };
    let cluster = shared_cluster().await;
    let api = spawn_app(test_config(&cluster)).await;
    // An API that was up and is gone: nothing listens on its port any more.
    let gone = spawn_app(test_config(&cluster)).await;
    let gone_addr = gone.addr;
    gone.stop().await;
    // An API without a usable replica: 503.
    let mut config = test_config(&cluster);
    let live_port = cluster.nodes()[0].port;
    config.replicas = vec![cluster
        .api_url(0)
        .replace(&format!(":{live_port}/"), &format!(":{}/", free_port()))];
    let unavailable = spawn_app(config).await;
    // An API whose CORS allow-list does not hold the page's origin.
    let mut config = test_config(&cluster);
    config.allowed_origins = vec!["https://elsewhere.example".into()];
    let forbidding = spawn_app(config).await;

    let widget = |id: &str, product: i32, base: &str, heading: &str| {
        format!(
            "<related-items id=\"{id}\" product-id=\"{product}\" api=\"{base}\" \
             heading=\"{heading}\"></related-items>\n"
        )
    };
    let page = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Another shop</title>\
         <script src=\"{api}/widget/related-items.js\" defer></script>\
         <style>body {{ margin: 0; padding: 24px 32px; background: #f4f6fa; \
         font-family: system-ui, sans-serif; }} related-items {{ background: #fff; \
         border-radius: 12px; padding: 16px 20px; margin-bottom: 18px; }}</style></head><body>\
         <h1>Another shop, on another origin</h1>{}{}{}{}{}</body></html>",
        widget("found", DEMO_PRODUCT, &api.base, "Related to product 42"),
        widget(
            "unknown",
            UNKNOWN_PRODUCT,
            &api.base,
            "Related to an unknown product"
        ),
        widget(
            "down",
            DEMO_PRODUCT,
            &format!("http://{gone_addr}"),
            "Related items (the API is down)"
        ),
        widget(
            "unavailable",
            DEMO_PRODUCT,
            &unavailable.base,
            "Related items (no database replica)"
        ),
        widget(
            "forbidden",
            DEMO_PRODUCT,
            &forbidding.base,
            "Related items (origin not allowed)"
        ),
        api = api.base,
    );
    let shop = static_page(page).await;
    assert_ne!(shop.port(), api.addr.port());
    let outcome =
        cross_origin_page(&browser.client, &format!("http://{shop}/shop.html"), &api).await;
    browser.close().await;
    for app in [api, unavailable, forbidding] {
        app.stop().await;
    }
    outcome.unwrap();
}

/// Only the embedded files are served under `/widget/`: no URL reaches the filesystem,
/// whatever dots, slashes or encodings it holds (raw requests: a client would normalise them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_embedded_files_are_served() {
    let cluster = shared_cluster().await;
    let app = spawn_app(test_config(&cluster)).await;
    for (path, status) in [
        ("/widget/related-items.js", 200),
        ("/widget/demo.html?product=7", 200),
        ("/widget/../openapi.json", 404),
        ("/widget/../../../../etc/passwd", 404),
        ("/widget/%2e%2e/%2e%2e/etc/passwd", 404),
        ("/widget/..%2f..%2fetc%2fpasswd", 404),
        ("/widget//related-items.js", 404),
        ("/widget/related-items.js/", 404),
        ("/widget/related-items.js%00", 404),
        ("/widget/./demo.html", 404),
        ("/widget/", 404),
        ("/widget", 404),
        ("/WIDGET/demo.html", 404),
        ("/Cargo.toml", 404),
        ("/api/src/lib.rs", 404),
    ] {
        let response = raw_request(
            app.addr,
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(raw_status(&response), Some(status), "{path}:\n{response}");
        if status == 404 {
            assert!(response.contains("\"code\":\"not_found\""), "{path}");
        }
    }
    // The operator listener serves none of them.
    for path in [
        "/openapi.json",
        "/widget/related-items.js",
        "/widget/demo.html",
    ] {
        assert_eq!(app.get_admin(path).await.status(), 404, "operator {path}");
    }
    let r = app.get("/widget/related-items.js").await;
    assert_eq!(
        r.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert_eq!(r.text().await.unwrap(), api::assets::WIDGET_JS);
    let r = app.get("/widget/demo.html").await;
    assert!(r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("script-src 'self'"));
    app.stop().await;
}
