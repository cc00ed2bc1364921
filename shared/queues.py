"""Queue and task names: the API sends tasks by name, so neither side imports the other."""

INTERACTIVE_QUEUE = "interactive"  # single predictions (shared.lane); never behind bulk work
BULK_QUEUE = "bulk"  # chunks of item ids from jobs: a Redis list of that name (kombu)
# kombu's Redis transport keeps each delivered, not yet acknowledged message in this hash
# (its Channel.unacked_key); chunks are acknowledged late, so it holds those being worked.
BULK_UNACKED_KEY = "unacked"

CLASSIFY_CHUNK = "digits.classify_chunk"  # args: [item ids]
RECONCILE = "digits.reconcile"  # re-queues pending items whose messages were lost
