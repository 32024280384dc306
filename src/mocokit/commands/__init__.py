"""One module per `mocokit` subcommand. Each defines `register(subparsers)`, which adds its parser and sets
`handler` (a function of the parsed arguments returning the exit status). Commands parse and wire; the work lives
in the library."""
