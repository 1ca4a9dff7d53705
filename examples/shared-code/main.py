from greetings import greet

print(greet("Tower"))
