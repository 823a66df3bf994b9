# Minimal stand-ins for the devstack functions the rtmig-nova plugin calls
# (devstack's functions-common and inc/ini-config), for
# tests/unit/test_devstack_plugin.py.  CALLS records what would have run.

_RTMIG_STUBS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

function iniset { "${RTMIG_PYTHON:-python3}" "$_RTMIG_STUBS_DIR/ini.py" set "$@"; }
function iniget { "${RTMIG_PYTHON:-python3}" "$_RTMIG_STUBS_DIR/ini.py" get "$@"; }
function iniadd { "${RTMIG_PYTHON:-python3}" "$_RTMIG_STUBS_DIR/ini.py" add "$@"; }
function is_service_enabled {
    local service
    for service in "$@"; do
        [[ ",$ENABLED_SERVICES," == *",$service,"* ]] && return 0
    done
    return 1
}
function enable_service {
    ENABLED_SERVICES="${ENABLED_SERVICES:+$ENABLED_SERVICES,}$1"
}
function echo_summary { echo "$@"; }
function die {
    local line=$1
    shift
    echo "[ERROR] plugin.sh:$line $*" >&2
    exit 1
}
function setup_develop { echo "setup_develop $*" >> "$CALLS"; }
function rtmig-nova-shim { echo "rtmig-nova-shim $*" >> "$CALLS"; }
# the plugin's sudo calls are install/rm into the temporary tree
function sudo { "$@"; }
