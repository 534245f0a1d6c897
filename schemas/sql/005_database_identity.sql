-- A random id of this database file, made once. Consumers put it in their
-- Kafka client.id, so that a consumer told its group holds another member
-- can tell a process writing this same file (several processes may share a
-- projection's partitions) from one writing another file, whose database
-- gets the events of the partitions it holds instead of this one.
CREATE TABLE database_identity (
  id TEXT NOT NULL
);
INSERT INTO database_identity (id) VALUES (lower(hex(randomblob(8))));
