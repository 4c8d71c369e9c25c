//! One-time sign-in links as the server prints them: `<base>/signin#<code>`, and the same
//! link as a QR code for a phone's camera. The code rides in the fragment, which browsers
//! never send, so it stays out of access logs and proxies.

use anyhow::{Context, Result};
use mainloop_domain::records::User;
use mainloop_engine::Engine;
use std::io::IsTerminal;
use std::net::SocketAddr;

/// Where browsers reach this server: the configured public URL, else the listening
/// address.
#[must_use]
pub fn base_url(public_url: Option<&str>, addr: SocketAddr) -> String {
    public_url.map_or_else(
        || format!("http://{addr}"),
        |u| u.trim_end_matches('/').to_owned(),
    )
}

/// The link that signs a browser in with `code`.
#[must_use]
pub fn link(base: &str, code: &str) -> String {
    format!("{}/signin#{code}", base.trim_end_matches('/'))
}

/// `link` as a QR code of Unicode half blocks, dark modules drawn light so it scans off
/// a dark terminal as well as a light one (the quiet zone is part of the drawing).
///
/// # Errors
/// When the link is too long for a QR code.
pub fn qr(link: &str) -> Result<String> {
    let code = qrcode::QrCode::new(link.as_bytes()).context("drawing the QR code")?;
    Ok(code
        .render::<qrcode::render::unicode::Dense1x2>()
        .dark_color(qrcode::render::unicode::Dense1x2::Light)
        .light_color(qrcode::render::unicode::Dense1x2::Dark)
        .build())
}

/// Issues a fresh link for `user` and prints it, with its QR code when a person is
/// watching the terminal.
///
/// # Errors
/// On storage failure.
#[allow(clippy::print_stdout)]
pub async fn print_new(engine: &Engine, user: &User, base: &str) -> Result<()> {
    let code = engine
        .issue_sign_in_code(user, Engine::SIGN_IN_LINK_TTL)
        .await?;
    let link = link(base, &code);
    let minutes = Engine::SIGN_IN_LINK_TTL.as_secs() / 60;
    println!(
        "sign in as '{}' (once, within {minutes} minutes): {link}",
        user.name
    );
    if std::io::stdout().is_terminal() {
        match qr(&link) {
            Ok(drawing) => println!("{drawing}"),
            Err(e) => tracing::warn!(error = %e, "cannot show the sign-in link as a QR code"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_carry_the_code_in_the_fragment() {
        assert_eq!(
            link("https://m.example/", "mll_abc"),
            "https://m.example/signin#mll_abc"
        );
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(base_url(None, addr), "http://127.0.0.1:8080");
        assert_eq!(
            base_url(Some("https://m.example/"), addr),
            "https://m.example"
        );
        let drawing = qr(&link("https://m.example", &"x".repeat(47))).unwrap();
        assert!(drawing.lines().count() > 10, "{drawing}");
        assert!(drawing.chars().all(|c| " ▀▄█\n".contains(c)), "{drawing}");
    }
}
