"""What a model predicts about one migration."""

import dataclasses

from rtmig_nova.model.distribution import Distribution
from rtmig_nova.model.precopy import MigrationSettings


@dataclasses.dataclass
class Prediction:
    """Distributions of a migration's outcomes under given settings.

    :ivar total_time: seconds from the start of the migration to the guest
        running on the destination
    :ivar downtime: seconds the guest is stopped (stop-and-copy)
    :ivar bytes_sent: bytes on the wire
    :ivar rounds: pre-copy rounds (bitmap syncs) before stop-and-copy
    :ivar settings: the :class:`MigrationSettings` predicted for
    :ivar model: the model's name
    :ivar coarse: True when the profile was only an aggregate dirty rate
    """
    total_time: Distribution
    downtime: Distribution
    bytes_sent: Distribution
    rounds: Distribution
    settings: MigrationSettings
    model: str
    coarse: bool = False

    @property
    def converges(self):
        """Probability of converging within ``settings.max_rounds`` rounds."""
        return self.rounds.converged

    def converges_within(self, n_rounds):
        """Probability of stop-and-copy after at most ``n_rounds`` rounds."""
        return float(self.rounds.cdf(n_rounds))

    def to_dict(self, quantiles=(0.5, 0.95, 0.99)):
        """Plain-data summary (documented in README, `--json`)."""
        return {
            "model": self.model,
            "coarse_profile": self.coarse,
            "settings": dataclasses.asdict(self.settings),
            "converges": self.converges,
            "total_time_s": self.total_time.summary(quantiles),
            "downtime_s": self.downtime.summary(quantiles),
            "bytes_sent": self.bytes_sent.summary(quantiles),
            "rounds": self.rounds.summary(quantiles),
        }
