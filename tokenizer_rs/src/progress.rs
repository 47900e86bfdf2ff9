//! Progress bars on stderr for the long steps of training (counting words, merging pairs).

use indicatif::{ProgressBar, ProgressStyle};

pub(crate) fn progress_bar(show: bool, len: u64, message: &'static str, bytes: bool) -> Option<ProgressBar> {
    if !show {
        return None;
    }
    let bar = ProgressBar::new(len);
    let template = if bytes {
        "{msg:>16} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})"
    } else {
        "{msg:>16} [{bar:40}] {pos}/{len} (eta {eta})"
    };
    bar.set_style(ProgressStyle::with_template(template).unwrap().progress_chars("=> "));
    bar.set_message(message);
    Some(bar)
}

/// The bar for counting the words of files, in bytes (None when `show` is false).
pub fn file_progress(show: bool, total_bytes: u64) -> Option<ProgressBar> {
    progress_bar(show, total_bytes, "Count words", true)
}
