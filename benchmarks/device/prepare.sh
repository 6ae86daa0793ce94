#!/usr/bin/env bash
# Builds the device kit: the wheels this project needs on an offline GPU node beyond what its PyTorch image
# already holds, in a folder that travels with the repository (default .whl/, gitignored).
#
#   bash benchmarks/device/prepare.sh [--python-version 3.12] [--out .whl] [--limit-mib 64]
#
# Run it on a machine with PyPI access. What goes in (versions = the ones this project is tested with,
# benchmarks/device/kit_requirements.txt) and what stays out (the image's numpy, scipy, pandas,
# scikit-image, scikit-learn, matplotlib, seaborn, torch, ...: benchmarks/device/image_packages.txt, read off
# the GPU image): docs/gpu.md. Binary wheels are fetched for the node's Python (--python-version, default
# 3.12) and manylinux x86-64; sdist-only packages (nnunetv2, batchgenerators, ...) are built here into
# pure-Python wheels. Each wheel is rewritten uncompressed (same files, same RECORD) and then xz-compressed
# (NAME.whl.xz): SimpleITK's wheel alone is 50 MiB as a zip and ~27 MiB this way, and the travel limit
# (wheels + the project's files) is 64 MiB. check.sh decompresses and pip-installs them offline.
# Writes OUT/manifest.json (every file with its size, the Python tags, the limit check) and exits 1 if the
# kit and the repository's travelling files together exceed --limit-mib.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$REPO/benchmarks/device"
PYVER=3.12
OUTDIR="$REPO/.whl"
LIMIT_MIB=64
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/nnunetv2-mfns-device-kit"
while [ $# -gt 0 ]; do
  case "$1" in
    --python-version) PYVER="$2"; shift 2 ;;
    --out) OUTDIR="$2"; shift 2 ;;
    --limit-mib) LIMIT_MIB="$2"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ {print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    *) echo "error: prepare.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
if ! [[ "$PYVER" =~ ^3\.[0-9]+$ ]]; then
  echo "error: prepare.sh: --python-version must look like 3.12, got '$PYVER'" >&2; exit 2
fi
# the pip that fetches and builds: the project's venv if there is one, else python3's
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x "$REPO/.venv/bin/python" ]; then PY="$REPO/.venv/bin/python"; else PY=python3; fi
fi
"$PY" -m pip --version >/dev/null 2>&1 || { echo "error: prepare.sh: '$PY -m pip' does not run (set PYTHON=...)" >&2; exit 2; }

TAG="cp${PYVER/./}"
WORK="$CACHE/$TAG"  # downloads and builds are cached outside the repository (they must not travel)
mkdir -p "$WORK/dl"
STAGE="$(mktemp -d)"
trap 'rm -rf "$STAGE"' EXIT
PLATFORMS=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64
           --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)

# requirement lines: "name==version  kind" (kind: binary = fetch the node's wheel, pure = any py3 wheel or
# build one from the sdist); comments and blank lines skipped
mapfile -t REQS < <(grep -v '^\s*#' "$HERE/kit_requirements.txt" | grep -v '^\s*$')
for line in "${REQS[@]}"; do
  read -r req kind <<<"$line"
  name="${req%%==*}"
  norm="$(echo "$name" | tr 'A-Z-.' 'a-z__')"
  have="$(ls "$WORK/dl" | grep -i "^${norm}-${req##*==}-" | head -1 || true)"
  if [ -z "$have" ]; then
    echo "prepare.sh: fetching $req ($kind)"
    if [ "$kind" = binary ]; then
      "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
        "${PLATFORMS[@]}" -d "$WORK/dl" "$req" 2>&1 | { grep -v "is ignored: it is neither" || true; }
    else
      "$PY" -m pip wheel -q --no-deps -w "$WORK/dl" "$req" 2>&1 | { grep -v "is ignored: it is neither" || true; }
    fi
    have="$(ls "$WORK/dl" | grep -i "^${norm}-${req##*==}-" | head -1 || true)"
    [ -n "$have" ] || { echo "error: prepare.sh: no wheel for $req in $WORK/dl" >&2; exit 1; }
  fi
  if [ "$kind" = pure ] && [[ "$have" != *-none-any.whl ]]; then
    echo "error: prepare.sh: $have is not a pure-Python wheel (mark it 'binary' in kit_requirements.txt)" >&2; exit 1
  fi
  cp "$WORK/dl/$have" "$STAGE/"
done

rm -rf "$OUTDIR"
mkdir -p "$OUTDIR"
"$PY" - "$STAGE" "$OUTDIR" "$PYVER" "$REPO" "$LIMIT_MIB" "$CACHE/packed" <<'EOF'
import hashlib, json, lzma, os, shutil, subprocess, sys, zipfile
stage, out, pyver, repo, limit_mib = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5])
cache = sys.argv[6]
os.makedirs(cache, exist_ok=True)
items = []
for name in sorted(os.listdir(stage)):
    src = os.path.join(stage, name)
    dst = os.path.join(out, name + ".xz")
    # packing SimpleITK takes minutes: cached by the wheel's content (abi3 wheels serve several Pythons)
    with open(src, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    cached = os.path.join(cache, digest + ".xz")
    if not os.path.isfile(cached):
        stored = os.path.join(stage, name + ".stored")
        # the same members in the same order, uncompressed, so that xz sees the raw bytes (a wheel is a zip:
        # RECORD lists file hashes, not zip entries, so the wheel stays valid)
        with zipfile.ZipFile(src) as zin, zipfile.ZipFile(stored, "w", zipfile.ZIP_STORED) as zout:
            for info in zin.infolist():
                data = zin.read(info)
                copy = zipfile.ZipInfo(info.filename, info.date_time)
                copy.external_attr, copy.compress_type = info.external_attr, zipfile.ZIP_STORED
                zout.writestr(copy, data)
        with open(stored, "rb") as f, lzma.open(cached + ".part", "wb", preset=9 | lzma.PRESET_EXTREME) as g:
            while chunk := f.read(1 << 24):
                g.write(chunk)
        os.replace(cached + ".part", cached)
    shutil.copyfile(cached, dst)
    items.append({"file": name + ".xz", "wheel": name, "wheel_bytes": os.path.getsize(src),
                  "xz_bytes": os.path.getsize(dst)})
    print(f"prepare.sh: {name}: {os.path.getsize(src) / 2**20:.2f} MiB as a wheel, "
          f"{os.path.getsize(dst) / 2**20:.2f} MiB packed", flush=True)

def git(*args):
    return subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True, check=True).stdout

def size_of(paths):
    return sum(os.path.getsize(os.path.join(repo, p)) for p in paths if os.path.isfile(os.path.join(repo, p)))

tracked = [p for p in git("ls-files", "-z").split("\0") if p]
untracked = [p for p in git("ls-files", "-z", "--others", "--exclude-standard").split("\0") if p]
kit_bytes = sum(i["xz_bytes"] for i in items)
total = kit_bytes + size_of(tracked) + size_of(untracked)
manifest = {
    "schema": "nnunetv2_mfns.device_kit/1", "python_version": pyver, "wheels": items,
    "kit_bytes": kit_bytes, "tracked_files_bytes": size_of(tracked), "untracked_files_bytes": size_of(untracked),
    "travel_total_bytes": total, "limit_bytes": int(limit_mib * 2**20),
    "git_commit": git("rev-parse", "HEAD").strip(),
    "note": "travel total = kit + tracked + untracked-not-ignored files of the repository, as the device tool "
            "sends them; the project itself is installed from those files by check.sh",
}
with open(os.path.join(out, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=1)
mib = lambda b: f"{b / 2**20:.2f} MiB"
print(f"prepare.sh: kit {mib(kit_bytes)} in {len(items)} wheels; repository {mib(size_of(tracked))} tracked + "
      f"{mib(size_of(untracked))} untracked; travels {mib(total)} of {mib(limit_mib * 2**20)}")
if total > limit_mib * 2**20:
    print(f"error: prepare.sh: kit + repository = {mib(total)} > {limit_mib} MiB", file=sys.stderr)
    sys.exit(1)
EOF
echo "prepare.sh: wrote $OUTDIR (carry it with the repository; run: bash benchmarks/device/check.sh)"
