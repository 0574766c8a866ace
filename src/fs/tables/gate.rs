//! The pause gate: while a commit snapshots the upper layer, every operation that changes the
//! union waits here; operations already under way finish before the pause takes hold.

use parking_lot::{Condvar, Mutex};

#[derive(Debug, Default)]
struct GateState {
    paused: bool,
    inflight: usize,
}

/// Blocks changing operations while paused.
#[derive(Debug, Default)]
pub struct Gate {
    state: Mutex<GateState>,
    cv: Condvar,
}

/// Held by a changing operation while it runs.
pub struct Pass<'a> {
    gate: &'a Gate,
}

impl Gate {
    /// Wait until the union is not paused, then count this operation as under way.
    pub fn enter(&self) -> Pass<'_> {
        let mut st = self.state.lock();
        while st.paused {
            self.cv.wait(&mut st);
        }
        st.inflight += 1;
        Pass { gate: self }
    }

    /// Stop new changes and wait for those under way to finish.
    pub fn pause(&self) {
        let mut st = self.state.lock();
        while st.paused {
            self.cv.wait(&mut st);
        }
        st.paused = true;
        while st.inflight > 0 {
            self.cv.wait(&mut st);
        }
    }

    /// Let changes go on.
    pub fn resume(&self) {
        let mut st = self.state.lock();
        st.paused = false;
        self.cv.notify_all();
    }

    pub fn is_paused(&self) -> bool {
        self.state.lock().paused
    }
}

impl Drop for Pass<'_> {
    fn drop(&mut self) {
        let mut st = self.gate.state.lock();
        st.inflight -= 1;
        if st.inflight == 0 {
            self.gate.cv.notify_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    #[test]
    fn pause_holds_new_operations_until_resume()
    -> std::result::Result<(), Box<dyn std::error::Error>> {
        let gate = Arc::new(Gate::default());
        gate.pause();
        let done = Arc::new(AtomicBool::new(false));
        let (g, d) = (gate.clone(), done.clone());
        let t = std::thread::spawn(move || {
            let _p = g.enter();
            d.store(true, Ordering::SeqCst);
        });
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(
            !done.load(Ordering::SeqCst),
            "an operation ran while paused"
        );
        gate.resume();
        t.join().map_err(|_| "the operation's thread panicked")?;
        assert!(done.load(Ordering::SeqCst));
        Ok(())
    }
}
