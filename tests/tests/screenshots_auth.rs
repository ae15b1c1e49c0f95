//! Screenshot images (`/data/screenshots/<id>.png`, where `GET /vms/:name/screenshot`
//! redirects) are served only to the session, or the Basic user, that asked for the
//! screenshot, and only while kimchid still grants it: no credentials, a garbage or a
//! logged-out cookie is 401, anyone else 404 (as for an id that does not exist),
//! whatever their rights.

mod common;

use common::{expect, TemplateVm, Web};
use kimchi_tests::{request, Response, ADMIN, OUTSIDER, READER};

#[track_caller]
fn location(resp: &Response) -> String {
    resp.header("location")
        .unwrap_or_else(|| panic!("no Location: {resp:?}"))
        .to_owned()
}

#[track_caller]
fn assert_png(resp: &Response) {
    assert_eq!(resp.status, 200, "{resp:?}");
    assert_eq!(resp.header("content-type"), Some("image/png"), "{resp:?}");
}

#[test]
fn a_screenshot_image_is_served_only_to_whoever_asked_for_it() {
    let web = Web::admin();
    let vm = TemplateVm::create(&web, "shot-auth");
    let uri = vm.vm.uri();
    expect(web.action(&format!("{uri}/start")), 200, "start");
    let shot = format!("{uri}/screenshot");

    let png = location(&expect(web.get(&shot), 303, "screenshot"));
    assert!(png.starts_with("/data/screenshots/"), "{png}");
    let id = png
        .trim_start_matches("/data/screenshots/")
        .trim_end_matches(".png");
    assert_eq!(id.len(), 32, "a 128-bit id: {png}");
    assert_png(&web.get(&png));

    // Another session sees another URL for the very same screen, and not this one.
    let other_admin = Web::admin();
    let other_png = location(&expect(other_admin.get(&shot), 303, "screenshot"));
    assert_ne!(other_png, png);
    other_admin.get(&png).assert_error(404);
    web.get(&other_png).assert_error(404);

    // No credentials, or a cookie that is no session token: 401. A well-formed token
    // that owns no such image learns no more than for an id that does not exist.
    request("GET", &png).send().assert_error(401);
    let with_cookie = |cookie: &str| {
        request("GET", &png)
            .header("Cookie", &format!("kimchi_session={cookie}"))
            .send()
    };
    with_cookie("garbage").assert_error(401);
    with_cookie(&"ab".repeat(32)).assert_error(404);

    // Users without the console right get no screenshot, and nobody else's image.
    for user in [READER, OUTSIDER] {
        let them = Web::login(user);
        them.get(&shot).assert_error(403);
        them.get(&png).assert_error(404);
        request("GET", &png)
            .basic_auth(user.name, user.password)
            .send()
            .assert_error(404);
    }

    // Basic: the image is the user's, for Basic requests of that user only.
    let basic_png = location(&expect(
        request("GET", &shot)
            .basic_auth(ADMIN.name, ADMIN.password)
            .send(),
        303,
        "screenshot with Basic",
    ));
    assert_png(
        &request("GET", &basic_png)
            .basic_auth(ADMIN.name, ADMIN.password)
            .send(),
    );
    web.get(&basic_png).assert_error(404);
    request("GET", &png)
        .basic_auth(ADMIN.name, ADMIN.password)
        .send()
        .assert_error(404);
}

#[test]
fn a_logged_out_sessions_images_are_401() {
    let web = Web::admin();
    let vm = TemplateVm::create(&web, "shot-out");
    let uri = vm.vm.uri();
    expect(web.action(&format!("{uri}/start")), 200, "start");
    let png = location(&expect(
        web.get(&format!("{uri}/screenshot")),
        303,
        "screenshot",
    ));
    assert_png(&web.get(&png));
    expect(web.action("/logout"), 204, "logout");
    web.get(&png).assert_error(401);
}
