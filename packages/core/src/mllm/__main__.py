"""``python -m mllm`` runs the command line."""

from mllm.cli.main import main

if __name__ == "__main__":
    main()
