-- The application's goal tables (NOT owned by this platform: the application creates them
-- in production). Used only by the local demo and the tests to create them when absent.
CREATE TABLE IF NOT EXISTS goal_sub_categories (
    id    INTEGER PRIMARY KEY,
    name  TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS goals (
    id               INTEGER PRIMARY KEY,
    name             TEXT    NOT NULL,
    sub_category_id  INTEGER NOT NULL REFERENCES goal_sub_categories (id)
);
CREATE TABLE IF NOT EXISTS user_goals (
    user_id  TEXT     NOT NULL,
    goal_id  INTEGER  NOT NULL REFERENCES goals (id),
    tier     SMALLINT NOT NULL CHECK (tier IN (1, 2))
);
CREATE INDEX IF NOT EXISTS user_goals_user_id ON user_goals (user_id);
CREATE TABLE IF NOT EXISTS apps (
    id            INTEGER PRIMARY KEY,
    package_name  TEXT    NOT NULL UNIQUE,
    name          TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS app_goal_sub_categories (
    app_id           INTEGER NOT NULL REFERENCES apps (id),
    sub_category_id  INTEGER NOT NULL REFERENCES goal_sub_categories (id),
    PRIMARY KEY (app_id, sub_category_id)
);
