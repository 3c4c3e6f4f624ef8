from robustprec.cli import main

main()
