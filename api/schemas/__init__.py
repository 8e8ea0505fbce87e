"""API schemas: the JSON shapes clients see. camelCase on the wire, snake_case in Python."""
