#!/usr/bin/env python3
"""Write the committed fuzz seeds to fuzz/seeds/TARGET/.

Usage: make_seeds.py [IMAGE_DIR]
IMAGE_DIR (optional) is the output of tests/fixtures/make-images.sh (busybox images made with
buildah and exported with skopeo): its small members (manifest.json, index.json, configs,
manifests, the small second layer) are copied in as seeds of real images. Everything else is
crafted here: hostile layer tars (escaping symlinks and hardlinks, devices, setuid, odd names,
deep trees, sparse entries, PAX xattrs), archives, headers, auth files, references, options.
"""
import gzip, hashlib, io, json, os, sys, tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
SEEDS = os.path.join(HERE, "seeds")


def put(target, name, data):
    d = os.path.join(SEEDS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def tar_bytes(entries, fmt=tarfile.PAX_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for e in entries:
            ti = tarfile.TarInfo(e["name"])
            ti.type = e.get("type", tarfile.REGTYPE)
            ti.mode = e.get("mode", 0o644)
            ti.uid = e.get("uid", 0)
            ti.gid = e.get("gid", 0)
            ti.mtime = e.get("mtime", 1)
            ti.linkname = e.get("link", "")
            ti.devmajor = e.get("major", 0)
            ti.devminor = e.get("minor", 0)
            ti.pax_headers = e.get("pax", {})
            data = e.get("data", b"")
            ti.size = len(data) if ti.type == tarfile.REGTYPE else 0
            t.addfile(ti, io.BytesIO(data) if ti.type == tarfile.REGTYPE else None)
    return buf.getvalue()


D, F, L, H, C, B, P = tarfile.DIRTYPE, tarfile.REGTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE

# ---- layer_apply: crafted layers
layers = {
    "basic": [
        {"name": "etc", "type": D, "mode": 0o755},
        {"name": "etc/motd", "data": b"hello\n"},
        {"name": "bin", "type": D},
        {"name": "bin/sh", "type": L, "link": "busybox"},
        {"name": "bin/busybox", "data": b"\x7fELF", "mode": 0o4755},
        {"name": "bin/ash", "type": H, "link": "bin/busybox"},
    ],
    "whiteouts": [
        {"name": "d", "type": D},
        {"name": "d/.wh..wh..opq", "data": b""},
        {"name": "d/.wh.gone", "data": b""},
        {"name": ".wh.top", "data": b""},
        {"name": "d/new", "data": b"n"},
    ],
    "escape_symlinks": [
        {"name": "abs", "type": L, "link": "/etc"},
        {"name": "up", "type": L, "link": "../../.."},
        {"name": "v", "type": L, "link": "../victim", "pax": {"SCHILY.xattr.user.evil": "x"}},
        {"name": "abs/passwd", "data": b"root::0:0::/:/bin/sh\n"},
        {"name": "up/victim", "data": b"owned"},
        {"name": "v", "data": b"through the link?"},
    ],
    "escape_hardlinks": [
        {"name": "h1", "type": H, "link": "../victim"},
        {"name": "h2", "type": H, "link": "/etc/passwd"},
        {"name": "s", "type": L, "link": "../victim"},
        {"name": "h3", "type": H, "link": "s"},
        {"name": "h3", "data": b"write through a link to a symlink"},
    ],
    "devices_setuid": [
        {"name": "dev", "type": D},
        {"name": "dev/null", "type": C, "major": 1, "minor": 3},
        {"name": "dev/sda", "type": B, "major": 8, "minor": 0, "mode": 0o666},
        {"name": "dev/fifo", "type": P},
        {"name": "dev/wh", "type": C, "major": 0, "minor": 0},
        {"name": "suid", "data": b"x", "mode": 0o6755, "uid": 1000, "gid": 1000},
        {"name": "sticky", "type": D, "mode": 0o1777},
    ],
    "names": [
        {"name": "new\nline", "data": b"1"},
        {"name": "tab\there", "data": b"2"},
        {"name": "./dot/./x", "data": b"3"},
        {"name": "/abs/file", "data": b"4"},
        {"name": "a" * 255, "data": b"5"},
        {"name": "x/" + "b" * 200 + "/" + "c" * 200, "data": b"6"},
        {"name": ".wh...", "data": b""},
        {"name": "dot/..", "data": b""},
    ],
    "xattrs": [
        {"name": "f", "data": b"x", "pax": {
            "SCHILY.xattr.user.a": "1",
            "SCHILY.xattr.trusted.overlay.opaque": "y",
            "SCHILY.xattr.user.containers.override_stat": "0:0:4755",
            "SCHILY.xattr.security.capability": "\x01\x00\x00\x02",
        }},
        {"name": "d", "type": D, "pax": {"SCHILY.xattr.user.overlay.redirect": "/etc"}},
    ],
    "deep": [{"name": "/".join(["d"] * n), "type": D} for n in range(1, 60)]
    + [{"name": "/".join(["d"] * 59) + "/leaf", "data": b"deep"}],
    "replace": [
        {"name": "a", "type": D},
        {"name": "a/f", "data": b"1"},
        {"name": "a", "data": b"file replaces dir"},
        {"name": "a", "type": L, "link": "/"},
        {"name": "a", "type": D},
        {"name": "a/g", "data": b"2"},
    ],
}
for name, entries in layers.items():
    put("layer_apply", name + ".tar", tar_bytes(entries))
put("layer_apply", "basic.tar.gz", gzip.compress(tar_bytes(layers["basic"]), mtime=0))
put("layer_apply", "gnu-longnames.tar", tar_bytes(layers["names"][:6], tarfile.GNU_FORMAT))
# A GNU sparse entry with a big real size (python writes it as PAX 1.0 sparse map).
sp = tarfile.TarInfo("sparse")
sp.size = 4
sp.pax_headers = {"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                  "GNU.sparse.name": "sparse", "GNU.sparse.realsize": str(1 << 40)}
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
    t.addfile(sp, io.BytesIO(b"1\n0\n"))
put("layer_apply", "sparse-huge.tar", buf.getvalue())
put("layer_apply", "empty", b"")
put("layer_apply", "zeros.tar", b"\0" * 1024)

# ---- archive_load: small docker-archive and OCI layout tars
layer = tar_bytes(layers["basic"])
diff_id = "sha256:" + hashlib.sha256(layer).hexdigest()
config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                     "rootfs": {"type": "layers", "diff_ids": [diff_id]},
                     "history": [{"created_by": "seed"}]}, separators=(",", ":")).encode()
chex = hashlib.sha256(config).hexdigest()
lhex = hashlib.sha256(layer).hexdigest()
manifest_json = json.dumps([{"Config": chex + ".json", "RepoTags": ["seed:latest"],
                             "Layers": [lhex + "/layer.tar"]}]).encode()
put("docker_manifest", "crafted.json", json.dumps(
    [{"Config": "config.json", "RepoTags": ["a:b", "localhost:5000/x/y:z"], "Layers": ["layer.tar"]},
     {"Config": "config.json", "RepoTags": None, "Layers": ["../layer.tar", "/etc/passwd"]}]))
put("docker_manifest", "blobs.json", json.dumps(
    [{"Config": "blobs/sha256/" + "0" * 64, "Layers": ["blobs/sha256/" + "1" * 64]}]))


def members_tar(files, links=()):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        dirs = set()
        for path, data in files:
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    ti = tarfile.TarInfo(d)
                    ti.type = D
                    ti.mode = 0o755
                    t.addfile(ti)
            ti = tarfile.TarInfo(path)
            ti.size = len(data)
            t.addfile(ti, io.BytesIO(data))
        for path, kind, target in links:
            ti = tarfile.TarInfo(path)
            ti.type = kind
            ti.linkname = target
            t.addfile(ti)
    return buf.getvalue()


da = members_tar([("manifest.json", manifest_json), (chex + ".json", config),
                  (lhex + "/layer.tar", layer), ("repositories", b"{}")],
                 [("legacy.tar", L, lhex + "/layer.tar"), ("hl.tar", H, lhex + "/layer.tar")])
put("archive_load", "docker-archive.tar", da)
put("archive_load", "docker-archive.tar.gz", gzip.compress(da, mtime=0))
mani = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                              "digest": "sha256:" + chex, "size": len(config)},
                   "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                               "digest": "sha256:" + lhex, "size": len(layer)}]}).encode()
mhex = hashlib.sha256(mani).hexdigest()
index = json.dumps({"schemaVersion": 2, "manifests": [
    {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + mhex,
     "size": len(mani), "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}).encode()
oci = members_tar([("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index),
                   ("blobs/sha256/" + chex, config), ("blobs/sha256/" + lhex, layer),
                   ("blobs/sha256/" + mhex, mani)])
put("archive_load", "oci-layout.tar", oci)
put("archive_load", "escape.tar", members_tar([("manifest.json", b"[]")],
                                              [("x", L, "../victim"), ("y", H, "../../etc/passwd")]))
put("registry_manifest", "oci-manifest", b"\x01" + mani)
put("registry_manifest", "oci-index", b"\x00" + index)
put("image_config", "crafted.json", config)

# ---- oci_index: the layout of harness.rs (same bytes, so the digests match)
HCONFIG = b'{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"]},"history":[{"created_by":"fuzz"}]}'
hl = hashlib.sha256(b"\0" * 1024).hexdigest()
hc = hashlib.sha256(HCONFIG).hexdigest()
hm_doc = ('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":1024}]}' % (hc, len(HCONFIG), hl)).encode()
hm = hashlib.sha256(hm_doc).hexdigest()
hi_doc = ('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d,"platform":{"architecture":"amd64","os":"linux"}}]}' % (hm, len(hm_doc))).encode()
hi = hashlib.sha256(hi_doc).hexdigest()
put("oci_index", "manifest.json", json.dumps({"schemaVersion": 2, "manifests": [
    {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + hm,
     "size": len(hm_doc), "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}))
put("oci_index", "nested.json", json.dumps({"schemaVersion": 2, "manifests": [
    {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": "sha256:" + hi,
     "size": len(hi_doc), "annotations": {"org.opencontainers.image.ref.name": "localhost/x:y"}}]}))
put("oci_index", "bad-size.json", json.dumps({"schemaVersion": 2, "manifests": [
    {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + hm,
     "size": 1}]}))
put("oci_index", "escape.json", json.dumps({"schemaVersion": 2, "manifests": [
    {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:../../victim",
     "size": 16}]}))

# ---- registry_manifest: more shapes
put("registry_manifest", "docker-list", b"\x04" + json.dumps({"schemaVersion": 2,
    "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json", "manifests": [
        {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "digest": "sha256:" + "a" * 64,
         "size": 10, "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
        {"mediaType": "application/vnd.docker.distribution.manifest.v2+json", "digest": "sha256:" + "b" * 64,
         "size": 10, "platform": {"architecture": "amd64", "os": "linux"}}]}).encode())
put("registry_manifest", "schema1", b"\x06" + json.dumps({"schemaVersion": 1, "name": "x", "fsLayers": []}).encode())

# ---- www_authenticate
for i, h in enumerate([
    'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull"',
    'Basic realm="Registry Realm"',
    'Bearer realm="http://127.0.0.1:1/token",error="insufficient_scope",scope="a:b:pull,push"',
    'bearer REALM="x\\"y", service=s',
    'Bearer realm=',
    'Negotiate abc==',
    'Bearer ,,,realm="a",,',
]):
    put("www_authenticate", "h%d" % i, h)

# ---- auth_file
import base64
for i, doc in enumerate([
    {"auths": {"docker.io": {"auth": base64.b64encode(b"u:p").decode()}}},
    {"auths": {"https://index.docker.io/v1/": {"auth": base64.b64encode(b"u:p:q").decode()},
               "localhost:5000/a": {"username": "x", "password": "y"}}},
    {"auths": {"quay.io": {"auth": "!!!"}, "": {}}},
    {"auths": []},
]):
    put("auth_file", "a%d.json" % i, json.dumps(doc))
put("auth_file", "blank", b"  \n")
put("auth_file", "b64", base64.b64encode(b"user:pass"))

# ---- reference
for i, r in enumerate([
    "busybox", "library/busybox:1.36", "docker.io/library/busybox:latest",
    "localhost:5000/a/b-c_d.e:t1", "127.0.0.1:5000/x@sha256:" + "0" * 64,
    "quay.io/org/img:tag@sha256:" + "f" * 64, "[::1]:5000/x:y", "UPPER/case", "a//b", "x:",
    "index.docker.io/busybox", "localhost/x", "a" * 300, "linux/arm64/v8",
]):
    put("reference", "r%d" % i, r)

# ---- mount_options
for i, o in enumerate([
    "lowerdir=/l1:/l2,upperdir=/u,workdir=/w",
    "lowerdir=/a\\:b:/c,upperdir=/u,workdir=/w,metacopy=on,redirect_dir=on,index=on",
    "lowerdir=/l,timeout=0.5,threads=3,passthrough=all,sync_copyup,fsync=0,volatile",
    "lowerdir=/l,upperdir=/u,workdir=/w,uidmapping=0:1000:1,gidmapping=0:1000:1,squash_to_root",
    "lowerdir=/l,ro,allow_other,noatime,debug,unknown=1,,=,",
    "lowerdir=/l\0-f\0-o\0upperdir=/u,workdir=/w",
    "threads=0,timeout=-1,metacopy=maybe",
]):
    put("mount_options", "o%d" % i, o)
put("mount_options", "override-dev", b"0:0:0644:char-1-3")

# ---- real images (tests/fixtures/make-images.sh), small members only
if len(sys.argv) > 1:
    img = sys.argv[1]
    blobs = os.path.join(img, "img.oci", "blobs", "sha256")
    idx = open(os.path.join(img, "img.oci", "index.json"), "rb").read()
    put("oci_index", "buildah-index.json", idx)
    for h in sorted(os.listdir(blobs)):
        data = open(os.path.join(blobs, h), "rb").read()
        if len(data) > 64 * 1024:
            continue
        if data[:2] == b"\x1f\x8b":
            put("layer_apply", "buildah-layer-" + h[:12] + ".tar.gz", data)
            continue
        doc = json.loads(data)
        if "rootfs" in doc:
            put("image_config", "buildah-" + h[:12] + ".json", data)
        elif "layers" in doc or "manifests" in doc:
            put("registry_manifest", "buildah-" + h[:12], b"\x00" + data)
    with tarfile.open(os.path.join(img, "img.docker.tar")) as t:
        put("docker_manifest", "skopeo-manifest.json", t.extractfile("manifest.json").read())
