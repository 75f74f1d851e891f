from apothic.cli.main import main

main()
