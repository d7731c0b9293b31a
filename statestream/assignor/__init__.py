"""The group assignor of statestream workers: lag-aware, sticky, with standbys and warm-ups.

* :mod:`statestream.assignor.plan`: the placement itself, a pure function;
* :mod:`statestream.assignor.userdata`: what members and leader tell each other;
* :mod:`statestream.assignor.assignor`: :class:`StateAssignor`, which runs the
  plan inside the group protocol of either transport.
"""

from statestream.assignor.assignor import StateAssignor, task_lags
from statestream.assignor.plan import MemberState, Plan, plan
from statestream.assignor.userdata import AssignmentInfo, SubscriptionInfo

__all__ = [
    "AssignmentInfo",
    "MemberState",
    "Plan",
    "StateAssignor",
    "SubscriptionInfo",
    "plan",
    "task_lags",
]
