"""One module per `emofusion` subcommand (see emofusion.cli for the protocol)."""
