"""`edgeship deploy fleet`: the same release, health check and rollback on many Pis, with Ansible.

The playbook and role (playbook/) do transport, batching and reporting; every step on a device
is the bundle's own release.py, as for `deploy push`.
"""

from edgeship.deploy.fleet.inventory import InventoryHost, inventory_hosts
from edgeship.deploy.fleet.rollout import FleetOptions, FleetReport, run_fleet, write_playbook

__all__ = [
    "FleetOptions",
    "FleetReport",
    "InventoryHost",
    "inventory_hosts",
    "run_fleet",
    "write_playbook",
]
