from erasekit.cli import main

main()
