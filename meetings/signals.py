"""``meeting_changed`` is sent after the commit of every change to a meeting.

Arguments: ``meeting_id``, ``from_status``, ``to_status`` (empty for a change that is not a
transition) and ``reason``. Receivers: the status push (signalling) and the DynamoDB mirror.
A receiver must not raise: the change is committed already.
"""

from django.dispatch import Signal

meeting_changed = Signal()
