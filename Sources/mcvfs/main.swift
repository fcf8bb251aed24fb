print("mcvfs")
