"""The command-line shell of ``launch.py``: flags and errors (main), one invocation (claim
the workdir, train each method, report), the workdir's lock and ownership, and the config
check that runs before any device is touched. The federated library (fl, models, peft,
data, train) never imports this package; pretraining, a launch.py program too, uses its check."""
