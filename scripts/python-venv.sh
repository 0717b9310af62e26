# Sourced by the scripts that need a Python tool from PyPI (build-guests.sh,
# schemathesis.sh): installs it, pinned, in a virtual environment of its own,
# once, and again only when its requirements file changes.
#
#   ensure_venv VENV REQUIREMENTS TOOL
#     VENV          the environment's directory (under build/)
#     REQUIREMENTS  the pinned requirements file
#     TOOL          the executable that shows it is installed (VENV/bin/TOOL)
ensure_venv() {
    local venv=$1 requirements=$2 tool=$3
    if [ ! -x "$venv/bin/$tool" ] || [ "$requirements" -nt "$venv/.installed" ]; then
        echo "installing $tool into ${venv#"$root/"}" >&2
        python3 -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$requirements"
        touch "$venv/.installed"
    fi
}
