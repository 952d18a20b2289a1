print("aethalloc: tool placeholder")
