//! Full disk: the upper and work dir (and, for the CLI, the store) on a size-limited tmpfs.
//!
//! - A copy-up of a lower file larger than the free space fails with ENOSPC, leaves no half
//!   file in the upper or the work dir, the merged file still shows the lower data, and once
//!   space is freed the same mount copies up and writes again; kernel overlayfs mounts the
//!   upper afterwards and shows the same files.
//! - Writing into the mount until ENOSPC (what a `tar x` does) fails cleanly and the mount
//!   keeps working after the file is removed.
//! - `strata load`, `import`, `commit` and `save` running out of space fail with a message
//!   naming the lack of space, leave `strata fsck` clean and the store as before (no image, no
//!   layer, no staging, the container still mounted and writable).

mod common;
mod faultkit;

use faultkit::*;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const MIB: u64 = 1 << 20;

fn enospc(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC)
}

#[test]
fn copy_up_larger_than_free_space_is_enospc_and_the_mount_recovers() {
    if let Err(why) = mount_ready() {
        return skip(&why);
    }
    let work = common::tmpdir("faults-copyup");
    let lower = work.join("lower");
    std::fs::create_dir_all(lower.join("dir")).unwrap();
    let big = pattern(1, (24 * MIB) as usize);
    std::fs::write(lower.join("big"), &big).unwrap();
    let small = pattern(2, (2 * MIB) as usize);
    std::fs::write(lower.join("dir/small"), &small).unwrap();
    let lower_before = tree_digest(&lower);
    let disk = Tmpfs::new(&work.join("disk"), 16 * MIB);
    let upper = disk.dir.join("upper");
    let wdir = disk.dir.join("work");
    std::fs::create_dir_all(&upper).unwrap();
    std::fs::create_dir_all(&wdir).unwrap();
    let mnt = work.join("mnt");
    let mut m = Fuse::mount(&[&lower], &upper, &wdir, &mnt, "");

    // 1. Copy-up of 24 MiB into 16 MiB: ENOSPC at open (copy-up happens there) or at write.
    let r = std::fs::OpenOptions::new()
        .append(true)
        .open(mnt.join("big"))
        .and_then(|mut f| f.write_all(b"more").and_then(|()| f.sync_all()));
    let e = r.expect_err("a 24 MiB copy-up fit in 16 MiB");
    assert!(enospc(&e), "copy-up failed with {e}, not ENOSPC");
    assert!(
        !upper.join("big").exists(),
        "a half copy-up is in the upper"
    );
    let stray = files(&wdir);
    assert!(stray.is_empty(), "the work dir keeps {stray:?}");
    assert!(
        disk.free() > 15 * MIB,
        "the failed copy-up still holds space: {} free",
        disk.free()
    );
    assert!(
        std::fs::read(mnt.join("big")).unwrap() == big,
        "the merged file lost its lower data"
    );

    // 2. Fill the disk through the mount, as `tar x` would, until ENOSPC.
    let mut f = std::fs::File::create(mnt.join("filler")).unwrap();
    let chunk = vec![7u8; MIB as usize];
    let mut written = 0u64;
    let err = loop {
        match f.write_all(&chunk).and_then(|()| f.flush()) {
            Ok(()) => written += MIB,
            Err(e) => break e,
        }
        assert!(written < 64 * MIB, "wrote 64 MiB into a 16 MiB tmpfs");
    };
    let err = match err.raw_os_error() {
        Some(_) => err,
        None => f.sync_all().expect_err("sync of a full file"),
    };
    assert!(enospc(&err), "filling failed with {err}, not ENOSPC");
    drop(f);
    // A copy-up now fails too, and leaves nothing.
    let e = std::fs::OpenOptions::new()
        .append(true)
        .open(mnt.join("dir/small"))
        .and_then(|mut f| f.write_all(b"x").and_then(|()| f.sync_all()))
        .expect_err("a copy-up into a full disk succeeded");
    assert!(enospc(&e), "copy-up into a full disk: {e}");
    assert!(
        !upper.join("dir/small").exists(),
        "half copy-up of dir/small"
    );

    // 3. Free the space: the same mount copies up and writes again.
    std::fs::remove_file(mnt.join("filler")).unwrap();
    {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .custom_flags(0)
            .open(mnt.join("dir/small"))
            .expect("copy-up after freeing space");
        f.write_all(b"tail").unwrap();
        f.sync_all().unwrap();
    }
    write_synced(&mnt.join("new"), b"new file").unwrap();
    let mut want_small = small.clone();
    want_small.extend_from_slice(b"tail");
    assert!(std::fs::read(mnt.join("dir/small")).unwrap() == want_small);
    assert!(std::fs::read(upper.join("dir/small")).unwrap() == want_small);
    m.unmount();

    // 4. Kernel overlayfs reads the upper the same way.
    let stray = files(&wdir);
    assert!(
        stray.iter().all(|p| p.starts_with("index")),
        "work dir after unmount: {stray:?}"
    );
    match Kernel::mount(&[&lower], &upper, &wdir, &work.join("kmnt")) {
        Ok(k) => {
            assert!(std::fs::read(k.mnt.join("dir/small")).unwrap() == want_small);
            assert_eq!(std::fs::read(k.mnt.join("new")).unwrap(), b"new file");
            assert!(std::fs::read(k.mnt.join("big")).unwrap() == big);
            assert!(!k.mnt.join("filler").exists());
        }
        Err(e) => skip(&format!("kernel overlayfs: {e}")),
    }
    assert!(
        tree_digest(&lower) == lower_before,
        "the lower layer changed"
    );
}

fn assert_no_space_message(o: &std::process::Output, what: &str) {
    assert!(!o.status.success(), "{what} succeeded on a full disk");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("No space left on device") || err.contains("no space"),
        "{what}: the error does not say the disk is full: {err}"
    );
    assert!(!err.contains("panicked"), "{what} panicked: {err}");
}

#[test]
fn store_commands_out_of_space_fail_cleanly() {
    if let Err(why) = mount_ready() {
        return skip(&why);
    }
    let Some(fx) = common::fixtures() else {
        return skip("the fixture images cannot be built");
    };
    let work = common::tmpdir("faults-store");
    let archive = fx.join("img.docker.tar");

    // load and import into a store too small for the image.
    {
        let disk = Tmpfs::new(&work.join("tiny"), 2 * MIB);
        let root = disk.dir.join("store");
        let o = common::strata(&root, &["load", "-i", archive.to_str().unwrap()]);
        assert_no_space_message(&o, "load");
        assert_fsck_clean(&root, "a load out of space");
        assert!(common::ok(&root, &["images", "-q"]).trim().is_empty());
        let before = store_state(&root);
        let rootfs = work.join("rootfs.tar");
        let mut b = tar::Builder::new(std::fs::File::create(&rootfs).unwrap());
        let data = pattern(3, (3 * MIB) as usize);
        tar_append_file(&mut b, "big", &data);
        b.into_inner().unwrap().sync_all().unwrap();
        let o = common::strata(&root, &["import", rootfs.to_str().unwrap(), "big:1"]);
        assert_no_space_message(&o, "import");
        assert_fsck_clean(&root, "an import out of space");
        assert_eq!(store_state(&root), before, "import changed the store");
        assert!(
            disk.free() > MIB,
            "failed commands left {} bytes used",
            2 * MIB - disk.free()
        );
    }

    // commit of a container whose change does not fit twice more; save to a full disk.
    let disk = Tmpfs::new(&work.join("small"), 12 * MIB);
    let root = disk.dir.join("store");
    common::ok(&root, &["load", "-i", archive.to_str().unwrap()]);
    let mnt = common::ok(
        &root,
        &["mount", "--name", "c1", "localhost/strata-test:two"],
    );
    let mnt = Path::new(mnt.trim()).to_path_buf();
    let free = disk.free();
    // Leave less than the change's size free: the layer tar and the unpacked layer need 2x.
    let change = (free - MIB) as usize / 2 + (MIB as usize);
    write_synced(&mnt.join("change"), &pattern(4, change)).unwrap();
    let before = store_state(&root);
    let images_before = common::ok(&root, &["images", "-q"]);
    let o = common::strata(&root, &["commit", "c1", "img:committed"]);
    assert_no_space_message(&o, "commit");
    assert_fsck_clean(&root, "a commit out of space");
    assert_eq!(common::ok(&root, &["images", "-q"]), images_before);
    let after = store_state(&root);
    let gone: Vec<_> = before.iter().filter(|l| !after.contains(l)).collect();
    let new: Vec<_> = after.iter().filter(|l| !before.contains(l)).collect();
    assert!(
        new.iter()
            .all(|l| l.contains("/upper") || l.contains("/work")),
        "commit left {new:?} (and removed {gone:?})"
    );
    // The container keeps working.
    write_synced(&mnt.join("after"), b"still writable").unwrap();
    assert!(std::fs::read(mnt.join("change")).unwrap().len() == change);
    std::fs::remove_file(mnt.join("change")).unwrap();
    let o = common::strata(&root, &["commit", "c1", "img:committed"]);
    assert!(
        o.status.success(),
        "commit after freeing space: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    common::ok(&root, &["umount", "c1"]);

    // save onto a full disk: a clear error, no half archive left under the name.
    let out = Tmpfs::new(&work.join("out"), MIB);
    let dest = out.dir.join("img.tar");
    let o = common::strata(
        &root,
        &[
            "save",
            "-o",
            dest.to_str().unwrap(),
            "localhost/strata-test:two",
        ],
    );
    assert_no_space_message(&o, "save");
    assert!(
        !dest.exists(),
        "save left a half archive at {}",
        dest.display()
    );
    let left: Vec<_> = std::fs::read_dir(&out.dir).unwrap().flatten().collect();
    assert!(left.is_empty(), "save left {left:?}");
    assert_fsck_clean(&root, "a save out of space");
}
