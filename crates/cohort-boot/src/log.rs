//! Boot logging: every line to the console (stderr) and to syslog (facility user, ident
//! `cohort-boot`), through libc's `syslog(3)`, never through a shell (ec2-boot-init ran
//! `logger <msg>` unquoted).

use std::ffi::CString;
use std::sync::Once;

static OPEN: Once = Once::new();

fn syslog(priority: nix::syslog::Severity, message: &str) {
    OPEN.call_once(|| {
        let _ = nix::syslog::openlog(
            Some(c"cohort-boot"),
            nix::syslog::LogFlags::LOG_PID,
            nix::syslog::Facility::LOG_USER,
        );
    });
    // Interior NULs cannot cross into C; replace them rather than drop the line.
    if let Ok(text) = CString::new(message.replace('\0', "\\0")) {
        let _ = nix::syslog::syslog(priority, text.to_string_lossy().as_ref());
    }
}

/// Logs an informational line to the console and syslog.
pub fn info(message: &str) {
    eprintln!("cohort boot: {message}");
    syslog(nix::syslog::Severity::LOG_INFO, message);
}

/// Logs an error line to the console and syslog.
pub fn error(message: &str) {
    eprintln!("cohort boot: error: {message}");
    syslog(nix::syslog::Severity::LOG_ERR, message);
}
