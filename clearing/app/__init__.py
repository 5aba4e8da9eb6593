"""The app: the one place that wires every domain (app factory, CLI, demo, scheduler, migrations)."""
