# Builds what `cargo build --release` builds: the `pizza` binary (services, web app, topics) and `loadgen`.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p pizza -p loadgen

FROM debian:bookworm-slim
RUN useradd --system --create-home pizza
COPY --from=build /src/target/release/pizza /src/target/release/loadgen /usr/local/bin/
COPY config_sys /etc/pizza/config_sys
USER pizza
WORKDIR /home/pizza
ENV PIZZA_SYS_CONFIG=/etc/pizza/config_sys/default.ini
ENTRYPOINT ["pizza"]
