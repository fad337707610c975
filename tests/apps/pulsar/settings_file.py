# A --config file: `name = value` settings, as pulsar reads them.
workers = 2
thread_workers = 2
timeout = 40
color = "green"
