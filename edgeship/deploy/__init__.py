"""edgeship.deploy, by target: `pi/` (a bundle for a Raspberry Pi, pushed over SSH, installed,
tested, benched, kept as a service), `fleet/` (the same bundle to many Pis through Ansible),
`mobile/` (phone-ready models) and `web/` (the offline web app). `cli.py` wires them to
`edgeship deploy`; `errors.py` is their one exception type.

One way only: `fleet/` imports `pi/`; `pi/`, `mobile/` and `web/` import none of the others
(tests/test_layout.py).
"""

from edgeship.deploy.errors import DeployError

__all__ = ["DeployError"]
