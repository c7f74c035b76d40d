//! A terminal progress bar fed by the library's [`Observer`] calls.

use grin::progress::{CancelFlag, Observer, Progress};
use indicatif::{ProgressBar, ProgressStyle};

/// One bar per stage; a new stage name finishes the old bar and starts one.
#[derive(Debug)]
pub struct Bars {
    bar: Option<(ProgressBar, &'static str)>,
    cancel: CancelFlag,
}

impl Bars {
    pub fn new() -> Self {
        Bars {
            bar: None,
            cancel: CancelFlag::new(),
        }
    }

    pub fn finish(&mut self) {
        if let Some((bar, _)) = self.bar.take() {
            bar.finish();
        }
    }
}

impl Observer for Bars {
    fn progress(&mut self, p: &Progress) {
        let same = matches!(&self.bar, Some((_, s)) if *s == p.stage);
        if !same {
            self.finish();
            let bar = ProgressBar::new(p.total as u64);
            bar.set_style(
                ProgressStyle::with_template("{prefix:>14} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> "),
            );
            bar.set_prefix(p.stage);
            self.bar = Some((bar, p.stage));
        }
        if let Some((bar, _)) = &self.bar {
            bar.set_length(p.total as u64);
            bar.set_position(p.step as u64);
            let msg: Vec<String> = p.losses.iter().map(|(k, v)| format!("{k} {v:.4}")).collect();
            bar.set_message(msg.join(" "));
        }
    }

    fn is_cancelled(&self) -> bool {
        self.cancel.is_set()
    }
}
