"""One screen per module: instances -> instance -> attempt."""
