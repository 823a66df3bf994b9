# Licensed under the Apache License, Version 2.0 (the "License"); you may
# not use this file except in compliance with the License. You may obtain
# a copy of the License at
#
#      http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
# WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
# License for the specific language governing permissions and limitations
# under the License.

"""Validators of the ``rtmig:`` flavor extra specs for Nova's API.

Registered under Nova's stevedore namespace
``nova.api.extra_spec_validators`` (setup.cfg), so Nova (microversion
>= 2.86) answers a malformed ``rtmig:`` key, or an unknown one, with HTTP
400 and a message that names the key.  The keys, forms and descriptions are
:data:`rtmig_nova.model.flavor.SPECS`; each value is checked by the same
parser the scheduler and the compute use.  Checks across keys (a required
key missing, specs and Placement request disagreeing, a deadline shorter
than one pass over the memory) need the whole flavor and the host: the
scheduler filter makes them.
"""

from nova.api.validation.extra_specs import base
from nova import exception

from rtmig_nova.model import flavor


class RTMigSpecValidator(base.ExtraSpecValidator):
    """Nova's validator for one key, plus rtmig-nova's own value check:
    Nova's declarative forms cannot say "a runtime no longer than its
    period"."""

    def validate(self, name, value):
        super().validate(name, value)
        try:
            flavor.check_spec(name, value)
        except flavor.SpecError as e:
            raise exception.ValidationError(f"Validation failed; {e}.")


def register():
    return [
        RTMigSpecValidator(
            name=spec.name,
            description=spec.description
            + (" Required on a real-time flavor." if spec.required else
               f" Default: {spec.default}."),
            value={"type": str, "description": spec.form})
        for spec in flavor.SPECS
    ]
