"""One module per service: its rendered configuration (pure functions) and its workload."""
