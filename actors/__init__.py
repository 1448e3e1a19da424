"""Domain actors: datacenter, host, VM, volume, scheduler, tasks, monitor."""
