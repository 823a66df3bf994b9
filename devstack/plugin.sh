#!/bin/bash
#
# devstack plugin of rtmig-nova.
#
# What it does today: installs the rtmig_nova package (in develop mode) into
# devstack's Python environment and writes the [rtmig] defaults to nova.conf.
# What it does not do yet: the Nova scheduler filter and the libvirt driver
# hooks that use the model arrive in later issues; until then nothing in
# Nova reads these options, and the plugin only makes the package and the
# `rtmig` command available on the host.

# Save trace setting
_XTRACE_RTMIG_NOVA=$(set +o | grep xtrace)
set -o xtrace

function install_rtmig_nova {
    setup_develop $RTMIG_NOVA_DIR
}

function configure_rtmig_nova {
    # Later issues add the scheduler filter here, e.g. append rtmig_nova's
    # filter to [filter_scheduler] enabled_filters, and the driver hooks.
    iniset $NOVA_CONF rtmig model "$RTMIG_NOVA_MODEL"
    iniset $NOVA_CONF rtmig dirty_log "$RTMIG_NOVA_DIRTY_LOG"
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
        # Nothing runs as a service yet: nothing to stop.
        :
    fi

    if [[ "$1" == "clean" ]]; then
        # Nothing is installed outside the develop checkout yet.
        :
    fi
fi

# Restore xtrace
$_XTRACE_RTMIG_NOVA
