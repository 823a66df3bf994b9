#!/bin/bash
#
# devstack plugin of rtmig-nova.
#
# stack/install:     installs the package (develop mode) and its driver shim
#                    into Nova's package directory (rtmig-nova-shim install).
# stack/post-config: on every node, the [rtmig] options; on compute nodes
#                    compute_driver = rtmig.RTLibvirtDriver (it reports the
#                    real-time capacity to Placement and publishes the
#                    ledger the filter reads); on the scheduler the filter
#                    and the weigher (see docs/nova.md).
# unstack/clean:     clean removes the shim again.
#
# A required setting left empty fails the phase with its name.

# Save trace setting
_XTRACE_RTMIG_NOVA=$(set +o | grep xtrace)
set -o xtrace

function _rtmig_nova_require {
    # Fail the phase, naming them, if any of these settings is empty.
    local name missing=""
    for name in "$@"; do
        if [[ -z "${!name:-}" ]]; then
            missing="${missing:+$missing }$name"
        fi
    done
    if [[ -n "$missing" ]]; then
        die $LINENO "rtmig-nova: set $missing (devstack/settings says what each means)"
    fi
}

function install_rtmig_nova {
    _rtmig_nova_require RTMIG_NOVA_DIR
    setup_develop $RTMIG_NOVA_DIR
    # Into the Nova that setup_develop's Python imports (an editable
    # install cannot provide nova/virt/rtmig).
    rtmig-nova-shim install
}

function _rtmig_nova_default {
    # Nova's default of SECTION/OPTION, comma-separated (the installed
    # Nova's, so a list the file does not set yet is not lost).
    local section=$1 option=$2
    ${PYTHON:-python3} -c '
import sys
import nova.conf
print(",".join(getattr(getattr(nova.conf.CONF, sys.argv[1]), sys.argv[2])))
' $section $option
}

function _rtmig_nova_append {
    # Append VALUE to the comma-separated option SECTION/OPTION of FILE
    # unless it is there already; an option the file does not set starts
    # from Nova's default.
    local file=$1 section=$2 option=$3 value=$4
    local current
    current=$(iniget $file $section $option)
    if [[ -z "$current" ]]; then
        current=$(_rtmig_nova_default $section $option)
    fi
    if [[ ",$current," != *",$value,"* ]]; then
        iniset $file $section $option "${current:+$current,}$value"
    fi
}

function configure_rtmig_nova {
    _rtmig_nova_require NOVA_CONF RTMIG_NOVA_MODEL RTMIG_NOVA_DIRTY_LOG \
        RTMIG_NOVA_LINK_CAPACITY RTMIG_NOVA_MIGRATION_LINK_SHARE \
        RTMIG_NOVA_MIGRATION_CPU
    if is_service_enabled n-cpu; then
        _rtmig_nova_require NOVA_CPU_CONF STACK_USER RTMIG_NOVA_STATE_DIR \
            RTMIG_NOVA_PROFILE_DIR
    fi
    iniset $NOVA_CONF rtmig model "$RTMIG_NOVA_MODEL"
    iniset $NOVA_CONF rtmig dirty_log "$RTMIG_NOVA_DIRTY_LOG"
    iniset $NOVA_CONF rtmig link_capacity "$RTMIG_NOVA_LINK_CAPACITY"
    iniset $NOVA_CONF rtmig migration_link_share \
        "$RTMIG_NOVA_MIGRATION_LINK_SHARE"
    iniset $NOVA_CONF rtmig migration_cpu "$RTMIG_NOVA_MIGRATION_CPU"
    if is_service_enabled n-cpu; then
        # nova-compute (the stack user) starts rtmig's privsep daemon
        # through Nova's root helper (sudo nova-rootwrap), which admits
        # privsep-helper whatever its context: no filter of rtmig's
        iniset $NOVA_CPU_CONF DEFAULT compute_driver rtmig.RTLibvirtDriver
        # nova-compute runs as the stack user: the state files of its
        # live-migration reservations and the captured profiles live in
        # directories it owns.
        local dir
        for dir in "$RTMIG_NOVA_STATE_DIR" "$RTMIG_NOVA_PROFILE_DIR"; do
            sudo install -d -m 0700 -o $STACK_USER "$dir"
        done
        iniset $NOVA_CPU_CONF rtmig reservation_state_dir \
            "$RTMIG_NOVA_STATE_DIR"
        iniset $NOVA_CPU_CONF rtmig instance_profile_dir \
            "$RTMIG_NOVA_PROFILE_DIR"
    fi
    if is_service_enabled n-sch; then
        # available_filters is a multi-valued option: keep Nova's own
        # (its default, if the file has none yet)
        if [[ -z "$(iniget $NOVA_CONF filter_scheduler available_filters)" ]]; then
            iniadd $NOVA_CONF filter_scheduler available_filters \
                $(_rtmig_nova_default filter_scheduler available_filters | tr , ' ')
        fi
        iniadd $NOVA_CONF filter_scheduler available_filters \
            rtmig_nova.scheduler.filters.all_filters
        # enabled_filters and weight_classes are lists
        _rtmig_nova_append $NOVA_CONF filter_scheduler enabled_filters \
            RTReservationFilter
        _rtmig_nova_append $NOVA_CONF filter_scheduler weight_classes \
            rtmig_nova.scheduler.weights.RTHeadroomWeigher
    fi
}

if is_service_enabled rtmig-nova; then
    if [[ "$1" == "stack" && "$2" == "install" ]]; then
        echo_summary "Installing rtmig-nova"
        install_rtmig_nova

    elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
        echo_summary "Configuring rtmig-nova"
        configure_rtmig_nova
    fi

    if [[ "$1" == "unstack" ]]; then
        # Nothing of rtmig-nova runs as a service of its own.
        :
    fi

    if [[ "$1" == "clean" ]]; then
        rtmig-nova-shim uninstall || true
    fi
fi

# Restore xtrace
$_XTRACE_RTMIG_NOVA
