"""This deployment's identity: an id that no other careflow shares, and the key that signs
the links careflow puts in its emails. Both live in the database, created once."""
