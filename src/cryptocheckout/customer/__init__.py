"""What a customer sees of their order: the order with its payment and, later, its keys."""
