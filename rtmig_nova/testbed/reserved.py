"""The reservations a testbed run holds (:mod:`rtmig_nova.enforce.
reservation`), released together: the isolation experiment's rtmig
scenario and the validation experiment's shaped link."""

from rtmig_nova.enforce import reservation


class Reservations:
    """A testbed run's reservations, each applied all or nothing with its
    state file in ``state_dir``, released last first."""

    def __init__(self, state_dir, label):
        self.state_dir = state_dir
        self.label = label
        self.held = []
        self.applied = []       # what was reserved, in order

    def apply(self, what, steps):
        """Apply ``steps`` as one reservation named ``what``."""
        res = reservation.Reservation(steps, self.state_dir,
                                      label="%s %s" % (self.label, what))
        res.apply()
        self.held.append(res)
        self.applied.append(what)

    def release(self):
        """Undo every reservation; raises the first failure after trying
        them all."""
        failed = None
        while self.held:
            res = self.held.pop()
            try:
                reservation.release(res.ident, res.state_dir)
            except (reservation.ReservationError, OSError) as exc:
                failed = failed or exc
        if failed is not None:
            raise failed
