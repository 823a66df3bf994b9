"""Host enforcement: the imperative shell that applies a migration plan's
reservations (libvirt, SCHED_DEADLINE, tc) and removes them afterwards."""
