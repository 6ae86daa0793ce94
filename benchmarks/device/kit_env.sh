# Sourced by the device scripts (check.sh, long_budget_gpu.sh): installs the offline kit that prepare.sh built
# into a temporary --target folder and exports what makes the running shell use it. Needs REPO, PY, WHL, LOG and
# a `say` function from the caller; defines `install_kit NAME`, which returns 2 (after one `error: NAME: ...`
# line) when the kit cannot be installed or the project cannot be imported afterwards.
install_kit() {
  local name=$1 site kit
  shopt -s nullglob
  kit=("$WHL"/*.whl.xz)
  shopt -u nullglob
  if [ ${#kit[@]} -gt 0 ]; then
    site="$(mktemp -d "${TMPDIR:-/tmp}/mfns_kit.XXXXXX")"
    say "installing ${#kit[@]} wheels from $WHL and the project into $site/site (offline)"
    "$PY" - "$site/wheels" "${kit[@]}" <<'PYEOF' 2>&1 | tee -a "$LOG"
import lzma, os, shutil, sys
dest = sys.argv[1]
os.makedirs(dest, exist_ok=True)
for src in sys.argv[2:]:
    with lzma.open(src) as f, open(os.path.join(dest, os.path.basename(src)[:-len(".xz")]), "wb") as g:
        shutil.copyfileobj(f, g, 1 << 24)
PYEOF
    [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "error: $name: could not decompress the kit in $WHL" | tee -a "$LOG" >&2; return 2; }
    # the kit and the project from this tree in one call (setuptools, no build isolation: nothing to download)
    "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --no-cache-dir \
        --disable-pip-version-check --target "$site/site" "$site"/wheels/*.whl "$REPO" 2>&1 | tee -a "$LOG"
    [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "error: $name: pip could not install the kit and the project (wheels for another Python? see $LOG)" | tee -a "$LOG" >&2; return 2; }
    rm -rf "$site/wheels"
    export PYTHONPATH="$site/site${PYTHONPATH:+:$PYTHONPATH}" PATH="$site/site/bin:$PATH"
    # a --target folder is no site directory, so the discovery .pth does not run: name nnU-Net's trainer folder
    export nnUNet_extTrainer="$site/site/nnunetv2_mfns/nnunet_ext${nnUNet_extTrainer:+:$nnUNet_extTrainer}"
    if [ -f "$WHL/manifest.json" ]; then export MFNS_DEVICE_KIT_MANIFEST="$WHL/manifest.json"; fi
  else
    say "no kit in $WHL (run benchmarks/device/prepare.sh for an offline node): using $PY's own packages"
  fi
  "$PY" -c "import nnunetv2, nnunetv2_mfns.trainers, SimpleITK, nilearn" >>"$LOG" 2>&1 || {
    echo "error: $name: $PY cannot import the project and nnU-Net (no kit in $WHL? run prepare.sh; see $LOG)" | tee -a "$LOG" >&2; return 2; }
}
