"""Options and settings: the option table (command line, ini), parsing with clear errors, precedence and the one set of defaults. Imports nothing heavy."""
