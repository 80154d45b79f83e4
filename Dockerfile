# One image for both processes; the command picks the role (see docker-compose.yml and the Procfile).
# Node 24 (LTS): the whole test suite passes on Node 20, 24 and 26; Node 20 is past its end of life.
FROM node:24-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
# The data volume is mounted here: made by the image for its user, or Docker would make it root's (not writable).
RUN mkdir -p /app/data && chown node:node /app/data
USER node
EXPOSE 3000
CMD ["node", "--import", "tsx", "src/api/main.ts"]
