#!/bin/sh
# Install this edgeship bundle on the device (Raspberry Pi OS Bookworm: python3 3.11).
#
#   ./install.sh [--venv DIR]
#
# 1. verify.py checks every file against manifest.json; a mismatch installs nothing.
# 2. A venv (default ./venv; --venv DIR to share one across releases) gets requirements.txt,
#    from ./wheels with --no-index when the bundle carries wheels, else from the package index.
#    A venv whose stamp matches requirements.txt (and the Python version) is reused as is.
# 3. ./venv points at that venv: run `venv/bin/python -m edge_runtime predict MODEL IMAGE`.
# Set PYTHON to use another interpreter than python3.
set -eu

HERE=$(cd "$(dirname "$0")" && pwd)
VENV=""
while [ $# -gt 0 ]; do
    case "$1" in
        --venv) [ $# -ge 2 ] || { echo "error: --venv needs a folder" >&2; exit 2; }
                VENV=$2; shift 2 ;;
        --venv=*) VENV=${1#--venv=}; shift ;;
        -h|--help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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

# 2. the venv, keyed by requirements.txt and the Python version
[ -n "$VENV" ] || VENV="$HERE/venv"
case "$VENV" in /*) ;; *) VENV="$PWD/$VENV" ;; esac
WANT=$("$PYTHON" -c 'import hashlib, sys
data = open(sys.argv[1], "rb").read()
print(hashlib.sha256(data).hexdigest(), "python%d.%d" % sys.version_info[:2])' "$HERE/requirements.txt")
STAMP="$VENV/.edgeship-requirements"
mkdir -p "$(dirname "$VENV")"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$VENV.lock"
    flock 9   # two installs sharing one venv wait for each other
fi
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] \
    && "$VENV/bin/python" -c "import ai_edge_litert, numpy, PIL" >/dev/null 2>&1; then
    echo "reusing venv $VENV (requirements unchanged)"
else
    echo "creating venv $VENV"
    rm -rf "$VENV"
    if ! "$PYTHON" -m venv "$VENV"; then
        rm -rf "$VENV"
        echo "error: '$PYTHON -m venv' failed; install python3-venv (sudo apt install python3-venv) and rerun. Received: venv=$VENV" >&2
        exit 2
    fi
    MACHINE=$(uname -m)
    if ls "$HERE"/wheels/*_"$MACHINE".whl >/dev/null 2>&1; then
        echo "installing requirements.txt from the bundled wheels (offline)"
        set -- --no-index --find-links "$HERE/wheels"
    else
        if ls "$HERE"/wheels/*.whl >/dev/null 2>&1; then
            echo "the bundled wheels are not for this machine ($MACHINE)"
        fi
        echo "installing requirements.txt from the package index"
        set --
    fi
    if ! "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q \
        "$@" -r "$HERE/requirements.txt"; then
        rm -rf "$VENV"
        echo "error: pip install failed (see above): check the network or the disk space, then rerun ./install.sh. Received: venv=$VENV" >&2
        exit 2
    fi
    echo "$WANT" > "$STAMP"
fi

# 3. the bundle's own ./venv link
if [ "$VENV" != "$HERE/venv" ]; then
    if [ -e "$HERE/venv" ] && [ ! -L "$HERE/venv" ]; then
        echo "error: $HERE/venv is a folder; remove it to use --venv. Received: venv=$VENV" >&2
        exit 2
    fi
    rm -f "$HERE/venv"
    ln -s "$VENV" "$HERE/venv"
fi
"$HERE/venv/bin/python" -c "import ai_edge_litert, numpy, PIL" || {
    echo "error: the venv cannot import ai_edge_litert, numpy and PIL. Received: venv=$VENV" >&2
    exit 2
}
echo "installed: cd $HERE && venv/bin/python -m edge_runtime predict models/*.tflite samples/*.png"
