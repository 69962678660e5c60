print("kdcache")
