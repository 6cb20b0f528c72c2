from stepline.launch import main

main()
