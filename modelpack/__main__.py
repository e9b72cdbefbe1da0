from modelpack.cli import entry

entry()
