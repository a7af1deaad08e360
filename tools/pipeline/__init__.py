"""The one-command quick start: generate, train every stage, predict, and write the report."""
