"""Alert rules evaluated by the daemon: conditions over each rule's window, once per interval across daemons,
alert events and history, and signed webhook deliveries (DESIGN 4.4's alert rules, issue 16).

Modules: `port` (the storage primitives beyond the event store), `evaluator` (one rule, one interval),
`scheduler` (every rule of every namespace, every interval), `webhook` (delivery), `service` (AlertService).
"""
