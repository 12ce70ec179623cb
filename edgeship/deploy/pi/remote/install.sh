#!/bin/sh
# Install this edgeship bundle on the device (Raspberry Pi OS Trixie or Bookworm).
#
#   ./install.sh [--venv DIR]
#
# 1. verify.py checks every file against manifest.json; a mismatch installs nothing.
# 2. edge_runtime/device/targets.py picks the device's target (uname -m, the userland's bits, the
#    Python version, /etc/os-release) among the bundle's, or refuses the device in one line.
# 3. A venv (default ./venv; --venv DIR to share one across releases) gets the target's
#    requirements-<target>.txt, from ./wheels/<target> with --no-index when the bundle carries
#    them, else from the package index; bookworm-armhf's venv sees Debian's NumPy and Pillow.
#    A venv whose stamp matches the requirements (and the Python version) is reused as is.
# 4. ./venv points at that venv: run `venv/bin/python -m edge_runtime predict MODEL IMAGE`.
# Set PYTHON to use another interpreter than python3, EDGESHIP_TARGET to force a target.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
VENV=""
while [ $# -gt 0 ]; do
    case "$1" in
        --venv) [ $# -ge 2 ] || { echo "error: --venv needs a folder" >&2; exit 2; }
                VENV=$2; shift 2 ;;
        --venv=*) VENV=${1#--venv=}; shift ;;
        -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "error: unknown option. Usage: ./install.sh [--venv DIR]. Received: $1" >&2
           exit 2 ;;
    esac
done
PYTHON=${PYTHON:-python3}
if ! command -v "$PYTHON" >/dev/null 2>&1; then
    echo "error: $PYTHON not found; install it (sudo apt install python3 python3-venv). Received: PYTHON=$PYTHON" >&2
    exit 2
fi

# 1. the manifest must match, or nothing is installed
"$PYTHON" "$HERE/verify.py" || exit 2

# 2. the target: TARGET RUNTIME REQUIREMENTS SYSTEM_SITE SYSTEM_PACKAGES OFFLINE HAS_WHEELS
# (on stdin: run as a file, its folder would go first on sys.path, shadowing the stdlib)
VARS=$("$PYTHON" - --shell --bundle "$HERE" < "$HERE/edge_runtime/device/targets.py") || exit 2
eval "$VARS"
echo "target $TARGET"
if [ -n "$SYSTEM_SITE" ] && ! "$PYTHON" -c "import numpy, PIL" >/dev/null 2>&1; then
    echo "error: $TARGET uses Debian's NumPy and Pillow; install them: sudo apt install $SYSTEM_PACKAGES. Received: $PYTHON cannot import numpy, PIL" >&2
    exit 2
fi

# 3. the venv, keyed by the requirements, the Python version and the target
[ -n "$VENV" ] || VENV="$HERE/venv"
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
WANT=$("$PYTHON" -c 'import hashlib, sys
data = open(sys.argv[1], "rb").read()
print(hashlib.sha256(data).hexdigest(), "python%d.%d" % sys.version_info[:2], sys.argv[2])' \
    "$HERE/$REQUIREMENTS" "$TARGET")
CHECK="import $RUNTIME, numpy, PIL, starlette, uvicorn, python_multipart"
STAMP="$VENV/.edgeship-requirements"
mkdir -p "$(dirname "$VENV")"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$VENV.lock"
    flock 9   # two installs sharing one venv wait for each other
fi
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] \
    && "$VENV/bin/python" -c "$CHECK" >/dev/null 2>&1; then
    echo "reusing venv $VENV (requirements unchanged)"
else
    echo "creating venv $VENV"
    rm -rf "$VENV"
    set --
    [ -z "$SYSTEM_SITE" ] || set -- --system-site-packages
    if ! "$PYTHON" -m venv "$@" "$VENV"; then
        rm -rf "$VENV"
        echo "error: '$PYTHON -m venv' failed; install python3-venv (sudo apt install python3-venv) and rerun. Received: venv=$VENV" >&2
        exit 2
    fi
    if [ -n "$OFFLINE" ]; then
        echo "installing $REQUIREMENTS from the bundled wheels (offline)"
        set -- --no-index --find-links "$HERE/wheels/$TARGET"
    else
        if [ -n "$HAS_WHEELS" ]; then
            echo "the bundled $WHEEL_MACHINE wheels are not for this machine ($(uname -m))"
        fi
        echo "installing $REQUIREMENTS from the package index"
        set --
    fi
    if ! "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q \
        "$@" -r "$HERE/$REQUIREMENTS"; then
        rm -rf "$VENV"
        echo "error: pip install failed (see above): check the network or the disk space, then rerun ./install.sh. Received: venv=$VENV" >&2
        exit 2
    fi
    echo "$WANT" > "$STAMP"
fi

# 4. the bundle's own ./venv link
if [ "$VENV" != "$HERE/venv" ]; then
    if [ -e "$HERE/venv" ] && [ ! -L "$HERE/venv" ]; then
        echo "error: $HERE/venv is a folder; remove it to use --venv. Received: venv=$VENV" >&2
        exit 2
    fi
    rm -f "$HERE/venv"
    ln -s "$VENV" "$HERE/venv"
fi
"$HERE/venv/bin/python" -c "$CHECK" || {
    echo "error: the venv cannot import $RUNTIME, numpy, PIL and the service's starlette, uvicorn, python_multipart. Received: venv=$VENV" >&2
    exit 2
}
echo "installed ($TARGET): cd $HERE && venv/bin/python -m edge_runtime predict models/*.tflite samples/*.png"
